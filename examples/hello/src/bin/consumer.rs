use hello_waypost::GreeterClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = waypost::load_config("rpc.yaml")?;
    let consumer = waypost::consumer(&config).await?;
    let greeter = GreeterClient::new(consumer.channel())?;
    println!("{}", greeter.hello("Ada".into()).await?);
    consumer.close().await;
    Ok(())
}
