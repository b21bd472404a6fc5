-- Argo CD health check for smtprelay.io/v1alpha1 SmtpRelay and ClusterSmtpRelay
-- (argocd-cm keys resource.customizations.health.smtprelay.io_SmtpRelay and
-- resource.customizations.health.smtprelay.io_ClusterSmtpRelay).
--
-- One script for both kinds: they share one status (SmtpRelayStatus), and the only
-- ClusterSmtpRelay-specific condition, DefaultRelay, never appears on a SmtpRelay.
-- Argo CD scripts cannot load a shared file, so render_cm.py puts the whole text
-- under each of the two argocd-cm keys.
--
-- Written for Argo CD's sandbox: gopher-lua (Lua 5.1) with only the base and table
-- libraries (argocd-cm scripts run without resource.customizations.useOpenLibs):
-- no string.*, no math.*, no method calls on strings, no goto, no integer division.
--
-- The operator writes status.observedGeneration and, on every condition,
-- type/status/reason/message/lastTransitionTime/observedGeneration; Ready is the
-- summary of CredentialsResolved, Connected, SecureTransport, Authenticated and
-- TestMessageAccepted.
--
-- Mapping, first match wins:
--   no status                                           Progressing  the operator has not verified the relay yet
--   status.observedGeneration < metadata.generation     Progressing  status describes an older spec; re-verification due
--   no Ready condition                                  Progressing
--   Ready.observedGeneration < metadata.generation      Progressing
--   Ready=True                                          Healthy      message: Ready's message (with a DefaultRelay=False
--                                                                    note on a ClusterSmtpRelay whose default claim is
--                                                                    not honoured: the relay works, its claim is ignored)
--   Ready=Unknown (or any value but True/False)         Progressing  verification pending: "<reason>: <message>"
--   Ready=False, any reason                             Degraded     "<reason>: <message>"
--     The relay writes Ready=False only for a failed verification or an input that
--     cannot be used: SMTP failures (DnsFailure, ConnectionRefused, ConnectionFailed,
--     Timeout, GreetingRejected, EhloRejected, ProtocolError, ConnectionLost,
--     StartTlsNotOffered, StartTlsRejected, TlsHandshakeFailed, CertificateInvalid,
--     AuthRejected, AuthMechanismUnsupported, SenderRejected, RecipientRejected,
--     MessageRejected, InvalidTarget) and input problems (SecretNotFound,
--     SecretKeyMissing, SecretForbidden, SecretNotLabelled, CaBundleNotFound,
--     CaBundleInvalid, InvalidSpec). Failures are retried with backoff, so Degraded
--     clears by itself once the relay works again. SourceUnavailable (the API server
--     could not be read) is never written: the operator retries and keeps the old status.

local hs = {}

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

local kind = obj.kind or "relay"
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to verify the " .. kind
  return hs
end

if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to verify generation " .. tostring(generation)
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
  hs.message = "Waiting for the operator to verify generation " .. tostring(generation)
    .. " (Ready describes generation " .. tostring(ready.observedGeneration) .. ")"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  if hs.message == "" then
    hs.message = "Ready"
  end
  local claim = find_condition(status.conditions, "DefaultRelay")
  if claim ~= nil and claim.status == "False" then
    hs.message = hs.message .. " (DefaultRelay " .. describe(claim) .. ")"
  end
  return hs
end

if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready)
if hs.message == "" then
  hs.message = "Verification pending"
end
return hs
