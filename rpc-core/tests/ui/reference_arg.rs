#[waypost_core::service]
trait Svc {
    async fn greet(&self, name: &str) -> String;
}
fn main() {}
