//! Apply: the API calls and the mail, in the order the rules need (the attempt is
//! persisted before the mail leaves; the send is recorded on the fresh object).

use super::*;

pub(super) async fn write_identity_status(
    ctx: &Context,
    identity: &SenderIdentity,
    status: &SenderIdentityStatus,
) -> Result<SenderIdentity, Error> {
    let api: Api<SenderIdentity> = Api::namespaced(
        ctx.client.clone(),
        &identity.namespace().unwrap_or_default(),
    );
    Ok(crate::k8s::apply_status(&api, identity, status).await?)
}

pub(super) async fn remove_annotation(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<(), Error> {
    let api: Api<SenderIdentity> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({"metadata": {"annotations": {key: null}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(Error::Status)
}
