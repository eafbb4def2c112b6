//! How a request reached the host, as the edge marks it for the layers
//! above: a request that arrived over TLS carries [`OverTls`] in its
//! extensions, so the guest sees scheme `https` (`run::dispatch`) and the
//! session cookie is `Secure` (`edge::dashboard`).

/// The request arrived over TLS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OverTls;

/// Whether `request` arrived over TLS.
pub(crate) fn over_tls<B>(request: &http::Request<B>) -> bool {
    request.extensions().get::<OverTls>().is_some()
}

/// Put on a tenant's response by the dispatcher: set by the edge when the
/// response body is dropped before its end (the client went away
/// mid-body), so the request event can say `responseStreamDisconnected`.
#[derive(Clone, Debug)]
pub(crate) struct BodyWatch(pub(crate) std::sync::Arc<std::sync::atomic::AtomicBool>);
