-- Argo CD health check for smtprelay.io/v1alpha1 SenderIdentity
-- (argocd-cm key resource.customizations.health.smtprelay.io_SenderIdentity).
--
-- Written for Argo CD's sandbox: gopher-lua (Lua 5.1) with only the base and table
-- libraries (argocd-cm scripts run without resource.customizations.useOpenLibs):
-- no string.*, no math.*, no method calls on strings, no goto, no integer division.
--
-- The operator's conditions, in this order: RelayReady, ConfirmationSent, Confirmed,
-- ConnectionSecretReady (only with writeConnectionSecretToRef), then Ready. Ready=True
-- (reason Ready) when all are True; otherwise Ready=False carries the reason and
-- message of the FIRST condition that is not True. So Ready's reason says what the
-- identity is blocked on, and status.confirmation.state (Pending, Confirmed, Expired,
-- NotRequired) where the confirmation stands.
--
-- Mapping, first match wins:
--   no status                                        Progressing  not yet observed by the operator
--   status.observedGeneration < metadata.generation  Progressing  status describes an older spec
--   no Ready condition                               Progressing
--   Ready.observedGeneration < metadata.generation   Progressing
--   Ready=True                                       Healthy      (confirmed or NotRequired, relay Ready, Secret written)
--   Ready=Unknown (or any value but True/False)      Progressing  "<reason>: <message>"
--   Ready=False and confirmation.state=Expired       Degraded     whatever Ready's reason: the link and code expired
--                                                                 (Expired) or were withdrawn after too many wrong
--                                                                 codes (CodeAttemptsExhausted); only a new request
--                                                                 (annotation smtprelay.io/resend) moves it on
--   Ready=False, reason means "waiting":             Progressing  "<reason>: <message>"
--     Pending          Confirmed=False: the mail was accepted by the relay, waiting
--                      for the owner to open the link or give the code (until expiry)
--     Sending          ConfirmationSent=False: attempt recorded, mail being sent
--     CodeRejected     Confirmed=False: a wrong code was given in the annotation; the
--                      annotation is removed at once and the same link and code stay
--                      valid, so the identity is still waiting for its owner (after 5
--                      wrong codes the attempt is withdrawn: state Expired, above)
--     RelayNotVerified RelayReady=False: the relay has not been verified yet (it has
--                      no Ready condition); a failing relay is RelayNotReady (Degraded)
--     DailyLimitReached with confirmation.sentAt set: a resend was refused, but the
--                      link and code mailed before are still valid (an expired one is
--                      state Expired, above); the next reconcile shows Pending again
--     WaitingForRelay  (ConfirmationSent) and Waiting (ConnectionSecretReady): never
--                      Ready's reason today, because they are written only when an
--                      earlier condition (RelayReady, Confirmed) is already False and
--                      that one becomes Ready's reason; listed so that a future order
--                      still reads "waiting" as waiting
--   Ready=False, any other reason                    Degraded     "<reason>: <message>"
--     RelayNotReady    the relay is failing: "<relay> is not Ready (AuthRejected): ..."
--     RelayNotFound, NoDefaultRelay, NamespaceNotAllowed, UsageNotServed (RelayReady)
--     DailyLimitReached (ConfirmationSent) with no confirmation.sentAt: 5 confirmation
--                      mails in 24 h for this address (counted across identities) and
--                      none reached this one; nothing is sent until the window passes
--     an SMTP reason such as RecipientRejected, AuthRejected, Timeout, InvalidTarget
--                      (ConfirmationSent): the relay refused the confirmation mail;
--                      state stays Pending but no mail reached the owner (retried every
--                      minute)
--     Expired, CodeAttemptsExhausted  (ConfirmationSent/Confirmed), see above
--     PublishingNotAllowed, SecretWriteFailed, RelayCredentialsUnavailable
--                      (ConnectionSecretReady)
--     NotReady         (no reason could be named; not expected)

local hs = {}

local WAITING = {
  Pending = true,
  Sending = true,
  CodeRejected = true,
  WaitingForRelay = true,
  Waiting = true,
  RelayNotVerified = true,
}

local function find_condition(conditions, wanted)
  if type(conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(conditions) do
    if type(c) == "table" and c.type == wanted then
      return c
    end
  end
  return nil
end

local function describe(c)
  local reason = c.reason or ""
  local message = c.message or ""
  if reason == "" then
    return message
  end
  if message == "" then
    return reason
  end
  return reason .. ": " .. message
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the SenderIdentity"
  return hs
end

if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    .. " (status describes generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local ready = find_condition(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report the Ready condition"
  return hs
end

if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    .. " (Ready describes generation " .. tostring(ready.observedGeneration) .. ")"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  if hs.message == "" then
    hs.message = "Ready"
  end
  return hs
end

if ready.status ~= "False" then
  hs.status = "Progressing"
  hs.message = describe(ready)
  return hs
end

local state = nil
if status.confirmation ~= nil then
  state = status.confirmation.state
end

if state == "Expired" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  if ready.reason ~= "Expired" and ready.reason ~= "CodeAttemptsExhausted" then
    hs.message = hs.message .. " (and the confirmation expired: annotate smtprelay.io/resend with a new value to send a new one)"
  end
  return hs
end

if ready.reason ~= nil and WAITING[ready.reason] then
  hs.status = "Progressing"
  hs.message = describe(ready)
  return hs
end

if ready.reason == "DailyLimitReached" and status.confirmation ~= nil
  and status.confirmation.sentAt ~= nil then
  hs.status = "Progressing"
  hs.message = describe(ready) .. " (the confirmation mailed before is still valid)"
  return hs
end


hs.status = "Degraded"
hs.message = describe(ready)
return hs
