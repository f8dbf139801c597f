#[waypost_macros::service]
trait Svc {
    async fn any<T: serde::Serialize>(&self, value: T) -> u32;
}
fn main() {}
