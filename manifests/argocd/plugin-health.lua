-- Argo CD health of a vectorschema.dev/Plugin: its Ready condition says whether the
-- definition is valid (a Plugin has no Qdrant side of its own).
--   Healthy      Ready=True for the current generation
--   Degraded     Ready=False: the definition is invalid (the message names the field)
--   Progressing  not observed yet
-- Argo CD runs custom health scripts with the base and table libraries only: no string.*.
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}

if obj.status == nil then
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      local message = c.reason
      if c.message ~= nil and c.message ~= "" then
        message = c.reason .. ": " .. c.message
      end
      if c.status == "True" then
        hs.status = "Healthy"
      elseif c.status == "False" then
        hs.status = "Degraded"
      end
      hs.message = message
      return hs
    end
  end
end
return hs
