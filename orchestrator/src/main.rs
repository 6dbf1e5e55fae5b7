fn main() {
    println!("remedy");
}
