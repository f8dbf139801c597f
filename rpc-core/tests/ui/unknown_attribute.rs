#[waypost_core::service(name = "Svc", flavour = "spicy")]
trait Svc {
    async fn ping(&self);
}
fn main() {}
