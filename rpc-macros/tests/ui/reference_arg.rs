#[waypost_macros::service]
trait Svc {
    async fn greet(&self, name: &str) -> String;
}
fn main() {}
