struct Opaque;

#[kiq::task]
async fn takes_opaque(x: Opaque) -> i64 {
    let _ = x;
    1
}

fn main() {}
