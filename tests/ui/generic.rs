#[kiq::task]
async fn id<T: Send>(x: T) -> T {
    x
}

fn main() {}
