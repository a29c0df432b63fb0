//! A shop: checkout takes stock on the item's partition, then records the order on the
//! order's partition: two transactions in one workflow, each recorded, run exactly once.

use comb_backend::Function;
use serde_json::json;

use crate::{App, int};

/// The shop application.
pub const APP: App = App {
    name: "shop",
    schema: "
CREATE TABLE IF NOT EXISTS shop_items (item_id BIGINT PRIMARY KEY, price BIGINT NOT NULL, stock BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS shop_orders (order_id TEXT PRIMARY KEY, item_id BIGINT NOT NULL, qty BIGINT NOT NULL, total BIGINT NOT NULL);",
    functions,
    workflows: &[
        r#"{"name": "shop_stock", "steps": [{"id": "stock", "function": "shop_add_item", "input": "$input"}], "output": "$stock"}"#,
        r#"{"name": "checkout",
            "steps": [
              {"id": "take", "function": "shop_take_stock", "input": {"item": "$input.item", "qty": "$input.qty"}},
              {"id": "order", "function": "shop_record_order", "input": {"order": "$input.order", "item": "$input.item", "qty": "$input.qty", "total": "$take.total"}}
            ],
            "output": {"order": "$input.order", "total": "$take.total", "stock": "$take.stock"}}"#,
    ],
};

fn functions() -> Vec<Function> {
    vec![
        Function::new("shop_add_item")
            .statement("add", "INSERT INTO shop_items (item_id, price, stock) VALUES ($1, $2, $3) ON CONFLICT (item_id) DO UPDATE SET price = excluded.price, stock = shop_items.stock + excluded.stock RETURNING stock")
            .partition_by("item")
            .run(|tx, input| {
                let stock: i64 = tx.query_one("add", (int(&input, "item")?, int(&input, "price")?, int(&input, "stock")?))?;
                Ok(json!({ "item": input["item"], "stock": stock }))
            }),
        Function::new("shop_take_stock")
            .statement("take", "UPDATE shop_items SET stock = stock - $2 WHERE item_id = $1 AND stock >= $2 RETURNING price, stock")
            .partition_by("item")
            .run(|tx, input| {
                let (item, qty) = (int(&input, "item")?, int(&input, "qty")?);
                if qty <= 0 {
                    return Err("qty must be positive".into());
                }
                let Some((price, stock)) = tx.query_opt::<(i64, i64)>("take", (item, qty))? else {
                    return Err(format!("item {item} has fewer than {qty} in stock").into());
                };
                Ok(json!({ "total": price * qty, "stock": stock }))
            }),
        Function::new("shop_record_order")
            .statement("put", "INSERT INTO shop_orders (order_id, item_id, qty, total) VALUES ($1, $2, $3, $4)")
            .partition_by("order")
            .run(|tx, input| {
                let order = input.get("order").and_then(serde_json::Value::as_str).ok_or("input field \"order\" must be a string")?.to_owned();
                tx.execute("put", (order.clone(), int(&input, "item")?, int(&input, "qty")?, int(&input, "total")?))?;
                Ok(json!({ "order": order }))
            }),
    ]
}
