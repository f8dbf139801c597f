#[waypost_macros::service]
trait Svc {
    fn plain(&self) -> u32;
}
fn main() {}
