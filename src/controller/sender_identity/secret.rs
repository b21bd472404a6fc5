//! The connection Secret: its data, when it is withdrawn, and writing and deleting
//! it (never one this identity does not own).

use super::*;

/// The published connection Secret to withdraw, if any (pure): it was renamed or is
/// no longer wanted, the address is no longer confirmed, or the relay no longer
/// allows this namespace or publishing. A relay that is merely not Ready keeps it,
/// so applications are not broken by a passing relay failure.
pub fn revoked_secret<'a>(
    published: Option<&'a str>,
    wanted: Option<&str>,
    confirmation: ConfirmationState,
    publishing_allowed: &Result<bool, &str>,
) -> Option<&'a str> {
    let published = published?;
    let gone = wanted != Some(published);
    let unconfirmed = !matches!(
        confirmation,
        ConfirmationState::Confirmed | ConfirmationState::NotRequired
    );
    let disallowed = match publishing_allowed {
        Ok(allowed) => !allowed,
        Err(reason) => matches!(
            *reason,
            reasons::NAMESPACE_NOT_ALLOWED | reasons::RELAY_NOT_FOUND | reasons::NO_DEFAULT_RELAY
        ),
    };
    (gone || unconfirmed || disallowed).then_some(published)
}

/// Keys of the connection Secret.
pub fn connection_data(
    spec: &SenderIdentitySpec,
    relay: &RelayView,
    target: &smtp::Target,
    mode: TlsMode,
    custom_headers: &[(String, String)],
) -> BTreeMap<String, String> {
    let (from, reply_to) = effective_addresses(spec, Some(relay));
    let mut data = BTreeMap::from([
        ("host".to_string(), target.host.clone()),
        ("port".to_string(), target.port.to_string()),
        ("tlsMode".to_string(), format!("{mode:?}")),
        ("from".to_string(), from),
        ("fromAddress".to_string(), spec.address.clone()),
        ("replyTo".to_string(), reply_to),
        ("relay".to_string(), relay.label.clone()),
        (
            "customHeaders".to_string(),
            custom_headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect::<String>(),
        ),
        (
            "signature".to_string(),
            spec.signature.clone().unwrap_or_default(),
        ),
    ]);
    if let Some(n) = &spec.display_name {
        data.insert("fromName".into(), n.clone());
    }
    if let Some(c) = &target.credentials {
        data.insert("username".into(), c.username.clone());
        data.insert("password".into(), c.password.expose().to_string());
    }
    data
}

pub(super) async fn write_connection_secret(
    ctx: &Context,
    identity: &SenderIdentity,
    namespace: &str,
    name: &str,
    data: BTreeMap<String, String>,
) -> Result<(), String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let bytes: BTreeMap<String, k8s_openapi::ByteString> = data
        .into_iter()
        .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
        .collect();
    let owner = identity
        .controller_owner_ref(&())
        .ok_or_else(|| "the identity has no uid yet".to_string())?;
    match api.get_opt(name).await {
        Ok(Some(existing)) => {
            // Never take over a Secret this identity does not own: it could be any
            // application's, and it would be garbage-collected with the identity.
            let ours =
                crate::k8s::controlled_by(existing.metadata.owner_references.as_ref(), &owner.uid);
            if !ours {
                return Err(format!(
                    "Secret {namespace}/{name} already exists and is not owned by this identity; choose another name"
                ));
            }
            if existing.data.as_ref() == Some(&bytes) {
                return Ok(());
            }
        }
        Ok(None) => {}
        Err(e) => return Err(stable_error("reading", namespace, name, &e)),
    }
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [owner],
            "labels": {"app.kubernetes.io/managed-by": MANAGER},
        },
        "type": "Opaque",
        "data": bytes,
    });
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret))
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "the operator may not write Secrets in namespace {namespace} (chart value connectionSecrets.namespaces)"
            ),
            e => stable_error("writing", namespace, name, &e),
        })
}

/// Delete a connection Secret this identity owns (and nothing else).
pub(super) async fn delete_connection_secret(
    ctx: &Context,
    identity: &SenderIdentity,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let uid = identity.uid().unwrap_or_default();
    let Some(existing) = api.get_opt(name).await.map_err(Error::Status)? else {
        return Ok(());
    };
    let ours = crate::k8s::controlled_by(existing.metadata.owner_references.as_ref(), &uid);
    if !ours {
        return Ok(());
    }
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::Status(e)),
    }
}

/// An error message that does not change from one attempt to the next (no request
/// ids or addresses), so that writing it to status does not trigger another
/// reconcile that writes a different one.
pub(super) fn stable_error(doing: &str, namespace: &str, name: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "{doing} Secret {namespace}/{name}: {} ({})",
            s.reason, s.code
        ),
        _ => format!("{doing} Secret {namespace}/{name}: the API server could not be reached"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_credentials_are_withdrawn_when_they_must_be() {
        use ConfirmationState::{Confirmed, Expired, NotRequired, Pending};
        let ok: Result<bool, &str> = Ok(true);
        assert_eq!(
            revoked_secret(None, Some("a"), Pending, &ok),
            None,
            "nothing published"
        );
        assert_eq!(revoked_secret(Some("a"), Some("a"), Confirmed, &ok), None);
        assert_eq!(revoked_secret(Some("a"), Some("a"), NotRequired, &ok), None);
        assert_eq!(
            revoked_secret(Some("a"), Some("b"), Confirmed, &ok),
            Some("a"),
            "renamed"
        );
        assert_eq!(
            revoked_secret(Some("a"), None, Confirmed, &ok),
            Some("a"),
            "no longer wanted"
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Pending, &ok),
            Some("a"),
            "address changed"
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Expired, &ok),
            Some("a")
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Confirmed, &Ok(false)),
            Some("a"),
            "publishing turned off"
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Confirmed, &Err("NamespaceNotAllowed")),
            Some("a")
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Confirmed, &Err("RelayNotFound")),
            Some("a")
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Confirmed, &Err("RelayNotReady")),
            None,
            "a passing failure keeps it"
        );
    }
}
