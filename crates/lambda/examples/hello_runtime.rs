//! The smallest `lambda_runtime` function (it echoes its event), built like the relay's binaries: the baseline the
//! start-up and size figures in BENCHMARKS.md are compared with (`cargo build --release --example hello_runtime`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<_, Error>(event.payload) })).await
}
