-- Argo CD health of a Cadre Team: Healthy when every member Agent exists and is Ready.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    if condition.status == "True" then
      hs.status = "Healthy"
    elseif condition.reason == "AgentNotFound" then
      hs.status = "Degraded"
    else
      hs.status = "Progressing"
    end
    hs.message = condition.message or condition.reason or ""
  end
end
return hs
