#[waypost_macros::service]
trait Svc {
    async fn change(&mut self, v: u32);
}
fn main() {}
