#[waypost_macros::service]
trait Svc {
    async fn consume(self) -> u32;
}
fn main() {}
