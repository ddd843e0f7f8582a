//! The function URL's event before lambda_http reads it: a body marked base64 that is not base64 becomes a refusal.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderName, HeaderValue};
use lambda_http::request::LambdaRequest;
use lambda_http::{LambdaEvent, Service};

/// Set by [`guard_base64`], which first removes any a caller sent: the body was marked base64 but was not.
pub(crate) const BAD_BASE64: HeaderName = HeaderName::from_static("x-intercom-relay-bad-base64");

/// Prepares a function URL event for lambda_http: a body marked base64 that does not decode, on which lambda_http
/// panics (and the caller gets a 502), becomes an empty body with a marker the handler answers with 400.
pub fn guard_base64(mut request: LambdaRequest) -> LambdaRequest {
    if let LambdaRequest::ApiGatewayV2(event) = &mut request {
        event.headers.remove(&BAD_BASE64);
        if event.is_base64_encoded && event.body.as_deref().is_some_and(|body| STANDARD.decode(body).is_err()) {
            event.body = None;
            event.is_base64_encoded = false;
            event.headers.insert(BAD_BASE64, HeaderValue::from_static("1"));
        }
    }
    request
}

/// Applies [`guard_base64`] to every event before the service (lambda_http's adapter) reads it.
#[derive(Clone, Debug)]
pub struct Base64Guard<S>(pub S);

impl<S: Service<LambdaEvent<LambdaRequest>>> Service<LambdaEvent<LambdaRequest>> for Base64Guard<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, event: LambdaEvent<LambdaRequest>) -> Self::Future {
        let LambdaEvent { payload, context } = event;
        self.0.call(LambdaEvent { payload: guard_base64(payload), context })
    }
}
