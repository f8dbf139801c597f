#[waypost::service]
pub trait Greeter {
    async fn hello(&self, name: String) -> String;
}
