//! The daemon's HTTP listener: `/healthz`, `/readyz` (200 on the leader only, so a Service in
//! front of replicas sends webhook deliveries to the leader), `/metrics`, and the webhook
//! receivers under `/hooks/` (`triggers::hooks`).

use std::sync::Arc;

use super::observe::Metrics;

/// Serves `/healthz`, `/readyz`, `/metrics` and `/hooks/*` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: super::state::Store,
    hub: Option<Arc<super::triggers::hooks::Hub>>,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // (e.g. out of file descriptors: do not spin)
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        let store = store.clone();
        let hub = hub.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    let store = store.clone();
                    let hub = hub.clone();
                    async move {
                        if let (Some(hub), true) = (&hub, req.uri().path().starts_with("/hooks/")) {
                            return Ok(super::triggers::hooks::handle(hub, req).await);
                        }
                        let (status, ctype, body) = match req.uri().path() {
                            "/healthz" => (200, "text/plain; charset=utf-8", "ok\n".to_string()),
                            // Ready to take events: the leader (a Service in front of replicas
                            // sends webhook deliveries to the leader only).
                            "/readyz" if metrics.is_leader() => {
                                (200, "text/plain; charset=utf-8", "leader\n".to_string())
                            }
                            "/readyz" => (
                                503,
                                "text/plain; charset=utf-8",
                                "not the leader\n".to_string(),
                            ),
                            "/metrics" => match store.load().await {
                                Ok(s) => (
                                    200,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                    metrics.render(&s),
                                ),
                                Err(e) => (500, "text/plain; charset=utf-8", format!("{e}\n")),
                            },
                            _ => (404, "text/plain; charset=utf-8", "not found\n".to_string()),
                        };
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", ctype)
                            .body(Full::new(Bytes::from(body)))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
