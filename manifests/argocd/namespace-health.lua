-- Argo CD health of a vectorschema.dev/Namespace, from its status (the operator's
-- Ready/Reconciling/Stalled conditions and observedGeneration).
--   Healthy      Ready=True for the current generation
--   Suspended    a destructive plan waits for approval (Ready=False, AwaitingConfirmation):
--                Argo CD shows it as paused, with the plan's fingerprint in the message
--   Degraded     Stalled=True: nothing happens until the spec or the world changes; or a
--                backfill Job failed (Reprocessed=False, BackfillFailed): retry it with the
--                annotation vectorschema.dev/retry-backfill=<new value>
--   Progressing  anything else: not observed yet, being applied, retrying (Reconciling), or
--                the schema is in place and backfill Jobs run or wait (BackfillRunning)
-- Argo CD runs custom health scripts with the base and table libraries only: no string.*.
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

if obj.status == nil then
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local reprocessed = condition("Reprocessed")
if reprocessed ~= nil and reprocessed.status == "False" and reprocessed.reason == "BackfillFailed" then
  hs.status = "Degraded"
  hs.message = describe(reprocessed)
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" and reprocessed ~= nil and reprocessed.status == "False"
    and reprocessed.reason == "BackfillRunning" then
  hs.message = describe(reprocessed)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if ready ~= nil and ready.reason == "AwaitingConfirmation" then
  hs.status = "Suspended"
  hs.message = describe(ready)
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling)
  return hs
end
if ready ~= nil then
  hs.message = describe(ready)
end
return hs
