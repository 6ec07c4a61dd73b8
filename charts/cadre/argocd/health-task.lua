-- Argo CD health of a Cadre Task, from its phase and Succeeded condition.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil then
  return hs
end
local phase = obj.status.phase
local succeeded = nil
local accepted = nil
for _, condition in ipairs(obj.status.conditions or {}) do
  if condition.type == "Succeeded" then
    succeeded = condition
  elseif condition.type == "Accepted" then
    accepted = condition
  end
end
if (phase == nil or phase == "Pending") and accepted ~= nil and accepted.status == "False" then
  -- No Agent takes it (AgentNotFound, TeamNotFound): nothing will happen until a person acts.
  hs.status = "Degraded"
  hs.message = accepted.message or accepted.reason or "Not accepted"
  return hs
end
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
elseif phase == "InReview" and obj.spec.review ~= nil and obj.spec.review.humanApproval == true then
  hs.status = "Suspended"   -- waits for a person: `cadre approve` or spec.approval
  hs.message = "Waiting for human approval"
  return hs
else
  hs.status = "Progressing"
  hs.message = phase or "Pending"
end
if succeeded ~= nil and succeeded.message ~= nil and succeeded.message ~= "" then
  hs.message = succeeded.message
elseif hs.status ~= "Progressing" then
  hs.message = phase
end
return hs
