-- Argo CD health of a Cadre Agent, from its Ready condition.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "The operator has not seen the latest spec yet"
  return hs
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    if condition.status == "True" then
      hs.status = "Healthy"
    elseif condition.reason == "SecretMissing" or condition.reason == "SecretNotModelKey"
        or condition.reason == "SecretKeyMissing" or condition.reason == "EndpointNotAllowed" then
      -- refused until a person acts: the Secret, its label, or the Agent's baseURL
      hs.status = "Degraded"
    else
      hs.status = "Progressing"
    end
    hs.message = condition.message or condition.reason or ""
  end
end
return hs
