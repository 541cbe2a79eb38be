//! `$connect` of the WebSocket API (see `tether_functions` for the layout).

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use tether_functions::{handlers, runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let cold = runtime::ColdStart::begin("tether-connect");
    let deps = runtime::connect_deps().await?;
    cold.ready();
    let deps = &deps;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            // Boxed: the domain's futures are deep, and the runtime's layers
            // nest them beyond the compiler's default layout depth.
            Ok::<_, Error>(Box::pin(handlers::connect(event.payload, deps)).await?)
        },
    ))
    .await
}
