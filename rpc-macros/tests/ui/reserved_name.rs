#[waypost_macros::service]
trait Svc {
    async fn __health(&self) -> u32;
}
fn main() {}
