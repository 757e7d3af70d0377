//! Test plugin: a router that tells a webhook about every app publish over
//! `wasi:http`. The host links no network interface for plugins, so it must
//! refuse to load this component, and `madx-pusher plugin check` must list
//! its `wasi:http` imports as not provided (and every other import as
//! provided).

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "router-plugin",
    });

    use exports::madx::pusher::router::{ClientPublication, Guest, RouteError, Target};
    use madx::pusher::types::Claims;
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, OutgoingRequest};

    struct HttpRouter;

    impl Guest for HttpRouter {
        fn authorize_subscribe(_claims: Claims, _channel: String) -> Result<(), RouteError> {
            Ok(())
        }

        fn authorize_publish(
            _claims: Claims,
            channel: String,
            event: String,
        ) -> Result<ClientPublication, RouteError> {
            Ok(ClientPublication { channel, event })
        }

        fn route_publish(target: Target, event: String) -> Result<Vec<Target>, RouteError> {
            let request = OutgoingRequest::new(Fields::new());
            let path = format!("/published?event={event}");
            // A webhook that is down must not stop the publish.
            let _ = request.set_path_with_query(Some(&path));
            let _ = outgoing_handler::handle(request, None);
            Ok(vec![target])
        }
    }

    export!(HttpRouter);
}
