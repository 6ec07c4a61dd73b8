"""The API server: HTTP and its handler chain (authentication, authorization, admission),
object semantics over an in-memory store, watches, discovery, OpenAPI and tables."""
