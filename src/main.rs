fn main() {
    println!("easel");
}
