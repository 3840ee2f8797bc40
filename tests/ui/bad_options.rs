#[kiq::task(timeout = "soon")]
async fn a() {}

#[kiq::task(queue = "has space")]
async fn b() {}

#[kiq::task(priority = 3)]
async fn c() {}

fn main() {}
