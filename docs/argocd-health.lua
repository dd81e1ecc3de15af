-- Argo CD health check for lro.dev/LongRunningOperation (see docs/waiting.md).
-- Install it in argocd-cm under resource.customizations.health.lro.dev_LongRunningOperation.
--   Healthy      the operation succeeded (Ready=True)
--   Progressing  in flight, or the operator has not yet observed the latest spec
--   Degraded     Failed, Blocked, timed out, or cancelled without being asked (Stalled=True)
--   Suspended    cancelled because spec.cancel asked for it
-- Plain Lua 5.1 (what Argo CD runs); `obj` is the object.
local hs = {}

local function condition(kind)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick the operation up"
  return hs
end

local phase = obj.status.phase
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition("Ready")
local stalled = condition("Stalled")
local reconciling = condition("Reconciling")
local errorMessage = nil
if obj.status.error ~= nil then
  errorMessage = obj.status.error.message
end

if phase == "Cancelled" and obj.spec ~= nil and obj.spec.cancel == true then
  hs.status = "Suspended"
  hs.message = message(ready, "Cancelled as spec.cancel asked")
  return hs
end

if phase == "Failed" or phase == "Blocked" or phase == "Cancelled"
    or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = message(stalled, errorMessage or phase)
  return hs
end

if phase == "Succeeded" or (ready ~= nil and ready.status == "True") then
  hs.status = "Healthy"
  hs.message = message(ready, "Succeeded")
  return hs
end

hs.status = "Progressing"
hs.message = message(reconciling, phase)
return hs
