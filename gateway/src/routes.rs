//! Every route of the gateway, in one place. [`router`] takes the handlers' state and nothing
//! else, so routing (statuses, error bodies, fallbacks) is testable without NATS or PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{get, post};
use axum::{Router, middleware};
use shared::runtime::ops::{self, ReadinessCheck};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::heartbeat::{self, HeartbeatState};
use crate::limits::{self, RequestLimits};
use crate::meetings_api;
use crate::read_api::{self, ReadState};
use crate::view_links::{self, ViewLinkState};
use crate::webhook::{self, WebhookState};

/// What the handlers share.
pub struct AppState {
    pub webhooks: Arc<WebhookState>,
    pub heartbeats: Arc<HeartbeatState>,
    pub reads: Arc<ReadState>,
    pub view_links: Arc<ViewLinkState>,
    /// Answers `/readyz`.
    pub readiness: ReadinessCheck,
    /// Bounds requests in flight.
    pub limits: Arc<RequestLimits>,
    /// Origins whose pages may call the browser-facing routes (`*`: any); empty: none.
    pub cors_allowed_origins: Vec<String>,
}

/// The gateway's public routes: webhooks, heartbeats, the read API, the live page and the probes
/// (the metrics are served on their own address, [`crate::startup`]).
/// Requests are bounded in number ([`limits::limit_in_flight`]), but for the presence streams
/// (long-lived, bounded on their own) and the probes (which must answer under load). The routes
/// browsers call (`/v1/…`) answer CORS for the allowed origins; the webhook route never does.
pub fn router(state: AppState) -> Router {
    let AppState { webhooks, heartbeats, reads, view_links, readiness, limits, cors_allowed_origins } = state;
    let in_flight = middleware::from_fn_with_state(limits, limits::limit_in_flight);
    let server_side = Router::new()
        .route("/webhooks/livekit", post(webhook::receive).with_state(webhooks))
        .route("/rooms/{room}", get(read_api::live_page))
        .layer(in_flight.clone());
    let browser = Router::new()
        .route("/v1/heartbeats", post(heartbeat::receive).with_state(heartbeats))
        .route("/v1/rooms/{room}/attendance", get(read_api::room).with_state(reads.clone()))
        .route("/v1/rooms/{room}/attendance/{identity}", get(read_api::participant).with_state(reads.clone()))
        .route("/v1/rooms/{room}/meetings", get(meetings_api::list).with_state(reads.clone()))
        .route("/v1/meetings/{room_sid}", get(meetings_api::one).with_state(reads.clone()))
        .route("/v1/rooms/{room}/view-links", post(view_links::create).with_state(view_links))
        .layer(in_flight)
        .route("/v1/rooms/{room}/presence", get(read_api::presence).with_state(reads));
    let routes = Router::new()
        .merge(server_side)
        .merge(browser)
        .merge(ops::probes(readiness))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    // Outside the routing, so that a preflight (OPTIONS) is answered before a route's methods
    // are looked at.
    let routes = match cors(cors_allowed_origins) {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    routes.layer(TraceLayer::new_for_http())
}

/// CORS for the allowed origins, on the browser-facing routes (`/v1/…`) only: a page on one of
/// them may send a heartbeat or read with an `Authorization` header (no cookies: credentials are
/// never allowed, so `*` is safe), and read `Retry-After` and the CSV's `Content-Disposition`.
/// `None` without origins.
fn cors(origins: Vec<String>) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let any = origins.iter().any(|origin| origin == "*");
    let allow_origin = AllowOrigin::predicate(move |origin: &HeaderValue, request: &axum::http::request::Parts| {
        request.uri.path().starts_with("/v1/") && (any || origins.iter().any(|allowed| origin == allowed.as_str()))
    });
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::RETRY_AFTER, header::CONTENT_DISPOSITION])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt as _;
    use shared::livekit::KeySet;
    use shared::nats::WebhookStreamArgs;
    use shared::nats::webhooks::WebhookStream;
    use tower::ServiceExt as _;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::heartbeat::RateLimiter;
    use crate::metrics::GatewayMetrics;

    /// A router whose NATS and PostgreSQL are unreachable (nothing listens on port 1): what it
    /// answers without them is routing, verification and error mapping.
    async fn router_without_servers() -> Router {
        let keys = KeySet::parse("alpha: 0123456789abcdef0123456789abcdef").unwrap();
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .expect("connects in the background");
        let stream_args = WebhookStreamArgs::new(
            "ROUTES_TEST".into(),
            "routes.test".into(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let stream = WebhookStream::new(nats.clone(), &stream_args);
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        let limits = RequestLimits::new(&limits::RequestArgs { max_in_flight: 16, body_memory: 1 << 20 });
        router(AppState {
            webhooks: Arc::new(WebhookState {
                keys: keys.clone(),
                stream: stream.clone(),
                body_limit: 1024,
                body_timeout: Duration::from_secs(1),
                publish_timeout: Duration::from_millis(100),
                metrics,
                limits: limits.clone(),
            }),
            heartbeats: Arc::new(HeartbeatState {
                keys: keys.clone(),
                stream,
                publish_timeout: Duration::from_millis(100),
                limiter: RateLimiter::new(Duration::from_secs(1), 1),
            }),
            reads: Arc::new(ReadState {
                keys,
                pool: sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap(),
                nats,
                presence: crate::presence_stream::PresenceStreams::new(
                    &crate::presence_stream::PresenceStreamArgs { max: 4, per_identity: 2 },
                    &shared::nats::PresenceArgs {
                        stream: "ROUTES_PRESENCE".into(),
                        subject_prefix: "routes.presence".into(),
                        replicas: 1,
                        max_age: Duration::from_secs(60),
                    },
                ),
                shutdown: tokio_util::sync::CancellationToken::new(),
                policy: Default::default(),
            }),
            view_links: Arc::new(ViewLinkState {
                keys: KeySet::parse("alpha: 0123456789abcdef0123456789abcdef").unwrap(),
                args: crate::view_links::ViewLinkArgs { max_ttl: Duration::from_secs(86_400), public_url: None },
            }),
            readiness: Arc::new(|| Box::pin(async { Err("not in this test".to_owned()) })),
            limits,
            cors_allowed_origins: vec!["https://app.example".into()],
        })
    }

    async fn answer(router: &Router, method: &str, uri: &str) -> (StatusCode, String) {
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn code(body: &str) -> String {
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        json["error"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn every_route_answers_with_its_status_and_error_code() {
        let router = router_without_servers().await;
        let cases = [
            ("POST", "/webhooks/livekit", StatusCode::UNAUTHORIZED, "missing_authorization"),
            ("GET", "/webhooks/livekit", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ("POST", "/v1/heartbeats", StatusCode::UNAUTHORIZED, "missing_token"),
            ("GET", "/v1/rooms/algebra/attendance", StatusCode::UNAUTHORIZED, "missing_token"),
            ("GET", "/v1/rooms/algebra/attendance/ada", StatusCode::UNAUTHORIZED, "missing_token"),
            ("GET", "/v1/rooms/algebra/presence", StatusCode::UNAUTHORIZED, "missing_token"),
            ("GET", "/v1/rooms/algebra/meetings", StatusCode::UNAUTHORIZED, "missing_token"),
            ("GET", "/v1/meetings/RM_1", StatusCode::UNAUTHORIZED, "missing_token"),
            ("GET", "/nowhere", StatusCode::NOT_FOUND, "not_found"),
            ("GET", "/readyz", StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        ];
        for (method, uri, status, error) in cases {
            let (got_status, body) = answer(&router, method, uri).await;
            assert_eq!((got_status, code(&body).as_str()), (status, error), "{method} {uri}: {body}");
        }
        let (status, page) = answer(&router, "GET", "/rooms/algebra").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("<html"), "the live page");
        assert_eq!(answer(&router, "GET", "/healthz").await.0, StatusCode::OK);
        // The metrics are on the metrics address (METRICS_ADDR), not on the public listener.
        assert_eq!(answer(&router, "GET", "/metrics").await.0, StatusCode::NOT_FOUND);
    }

    /// A request with `Origin` (and, for a preflight, what it asks for); the CORS headers of the
    /// answer.
    async fn cors_answer(router: &Router, method: &str, uri: &str, origin: &str) -> (StatusCode, Option<String>) {
        let mut request = Request::builder().method(method).uri(uri).header("origin", origin);
        if method == "OPTIONS" {
            request = request
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization");
        }
        let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let allowed = response.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
        (response.status(), allowed)
    }

    #[tokio::test]
    async fn browser_routes_answer_cors_for_allowed_origins_only_and_webhooks_never() {
        let router = router_without_servers().await;
        let app = "https://app.example";
        for uri in ["/v1/heartbeats", "/v1/rooms/algebra/presence", "/v1/meetings/RM_1"] {
            let (status, allowed) = cors_answer(&router, "OPTIONS", uri, app).await;
            assert!(status.is_success(), "{uri}: preflight {status}");
            assert_eq!(allowed.as_deref(), Some(app), "{uri}");
            assert_eq!(cors_answer(&router, "OPTIONS", uri, "https://evil.example").await.1, None, "{uri}");
        }
        // The answer itself (here a 401) carries the header, so the page can read the error.
        assert_eq!(
            cors_answer(&router, "GET", "/v1/rooms/algebra/attendance", app).await,
            (StatusCode::UNAUTHORIZED, Some(app.into()))
        );
        // LiveKit's route is server to server: no CORS, ever.
        assert_eq!(cors_answer(&router, "OPTIONS", "/webhooks/livekit", app).await.1, None);
        assert_eq!(cors_answer(&router, "POST", "/webhooks/livekit", app).await.1, None);
    }

    #[test]
    fn origins_are_scheme_and_host_only() {
        for good in ["https://app.example.org", "http://localhost:3000", "*"] {
            assert!(crate::config::parse_origin(good).is_ok(), "{good}");
        }
        for bad in [
            "app.example.org",
            "https://app.example.org/",
            "https://a.example/path",
            "https://*.example.org",
            "ftp://x",
        ] {
            assert!(crate::config::parse_origin(bad).is_err(), "{bad}");
        }
    }
}
