#[kiq::task]
async fn greet(name: &str) -> String {
    name.to_string()
}

fn main() {}
