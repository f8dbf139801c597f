namespace rs echo

struct Item {
    1: required i64 sku,
    2: required i32 qty,
    3: required double price,
}

struct Record {
    1: required i64 id,
    2: required string name,
    3: required list<string> tags,
    4: required list<Item> items,
}

service Echo {
    binary echo_bytes(1: binary payload),
    string echo_text(1: string payload),
    Record echo_record(1: Record payload),
}
