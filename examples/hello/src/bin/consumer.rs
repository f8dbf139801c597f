use hello_rpc::GreeterClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = rpc::load_config("rpc.yaml")?;
    let consumer = rpc::consumer(&config).await?;
    let greeter = GreeterClient::new(consumer.channel())?;
    println!("{}", greeter.hello("Ada".into()).await?);
    consumer.close().await;
    Ok(())
}
