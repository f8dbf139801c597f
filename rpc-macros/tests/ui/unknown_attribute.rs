#[waypost_macros::service(name = "Svc", flavour = "spicy")]
trait Svc {
    async fn ping(&self);
}
fn main() {}
