//! A shop, after Google's Online Boutique: items with stock, a cart per user.
//!
//! - `browse` reads an item; `cart_add` puts items in a user's cart.
//! - `cart_checkout` empties the cart, takes the stock of every item in it and records the
//!   order's lines, as ONE transaction over the partitions involved: a checkout with an item
//!   out of stock changes nothing.
//! - `checkout` buys one item at once: it takes stock on the item's partition, then records
//!   the order on the order's partition: two transactions in one workflow, each recorded,
//!   run exactly once.
//! - `shop_load` adds a range of items, for benchmarks.

use comb_backend::{BoxError, Function};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{App, int};

/// Most items one `shop_load` call adds.
pub const LOAD_ITEMS_MAX: i64 = 1_000;

/// Most lines (distinct items) in one cart; `cart_add` refuses a new item beyond it.
pub const CART_LINES_MAX: usize = 100;

/// One line of a cart or an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    item: i64,
    qty: i64,
    /// The item's unit price, once the stock is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    price: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Lines {
    lines: Vec<Line>,
}

#[derive(Debug, Deserialize)]
struct OrderLines {
    order: String,
    lines: Vec<Line>,
}

#[derive(Debug, Deserialize)]
struct Load {
    from: i64,
    to: i64,
    price: i64,
    stock: i64,
}

/// The shop application.
pub const APP: App = App {
    name: "shop",
    schema: "
CREATE TABLE IF NOT EXISTS shop_items (item_id BIGINT PRIMARY KEY, price BIGINT NOT NULL, stock BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS shop_orders (order_id TEXT PRIMARY KEY, item_id BIGINT NOT NULL, qty BIGINT NOT NULL, total BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS shop_carts (user_id BIGINT NOT NULL, item_id BIGINT NOT NULL, qty BIGINT NOT NULL, PRIMARY KEY (user_id, item_id));",
    functions,
    workflows: &[
        r#"{"name": "shop_stock", "steps": [{"id": "stock", "function": "shop_add_item", "input": "$input"}], "output": "$stock"}"#,
        r#"{"name": "shop_load", "steps": [{"id": "load", "function": "shop_load_items", "input": "$input"}], "output": "$load"}"#,
        r#"{"name": "browse", "steps": [{"id": "item", "function": "shop_item", "input": "$input"}], "output": "$item"}"#,
        r#"{"name": "cart_add", "steps": [{"id": "add", "function": "shop_cart_add", "input": "$input"}], "output": "$add"}"#,
        r#"{"name": "cart_checkout",
            "steps": [
              {"id": "cart", "function": "shop_cart_take", "input": {"user": "$input.user"}},
              {"id": "take", "function": "shop_take_items", "input": {"lines": "$cart.lines"}},
              {"id": "order", "function": "shop_record_lines", "input": {"order": "$input.order", "lines": "$take.lines"}}
            ],
            "transactions": [["cart", "take", "order"]],
            "output": {"order": "$input.order", "lines": "$order.lines", "units": "$order.units", "total": "$take.total"}}"#,
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
        Function::new("shop_load_items")
            .statement("add", "INSERT INTO shop_items (item_id, price, stock) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .run_typed(|tx, load: Load| -> Result<serde_json::Value, BoxError> {
                if load.from < 0 || load.to < load.from || load.to - load.from > LOAD_ITEMS_MAX || load.price < 0 || load.stock < 0 {
                    return Err(format!("shop_load takes 0 <= from <= to <= from + {LOAD_ITEMS_MAX}, and a price and stock of at least 0").into());
                }
                let mut added = 0;
                for item in load.from..load.to {
                    added += tx.execute("add", (item, load.price, load.stock))?;
                }
                Ok(json!({ "added": added }))
            }),
        Function::new("shop_item").statement("get", "SELECT price, stock FROM shop_items WHERE item_id = $1").partition_by("item").run(|tx, input| {
            let item = int(&input, "item")?;
            Ok(match tx.query_opt::<(i64, i64)>("get", (item,))? {
                Some((price, stock)) => json!({ "item": item, "price": price, "stock": stock }),
                None => json!({ "item": null }),
            })
        }),
        Function::new("shop_cart_add")
            .statement("lines", "SELECT count(*) FROM shop_carts WHERE user_id = $1")
            .statement("add", "INSERT INTO shop_carts (user_id, item_id, qty) VALUES ($1, $2, $3) ON CONFLICT (user_id, item_id) DO UPDATE SET qty = shop_carts.qty + excluded.qty RETURNING qty")
            .partition_by("user")
            .run(|tx, input| {
                let (user, item, qty) = (int(&input, "user")?, int(&input, "item")?, int(&input, "qty")?);
                if qty <= 0 {
                    return Err("qty must be positive".into());
                }
                let lines: i64 = tx.query_one("lines", (user,))?;
                let in_cart: i64 = tx.query_one("add", (user, item, qty))?;
                if in_cart == qty && lines as usize >= CART_LINES_MAX {
                    return Err(format!("a cart holds at most {CART_LINES_MAX} distinct items").into());
                }
                Ok(json!({ "user": user, "item": item, "qty": in_cart }))
            }),
        Function::new("shop_cart_take")
            .statement("lines", "SELECT item_id, qty FROM shop_carts WHERE user_id = $1 ORDER BY item_id")
            .statement("clear", "DELETE FROM shop_carts WHERE user_id = $1")
            .partition_by("user")
            .run(|tx, input| {
                let user = int(&input, "user")?;
                let lines: Vec<(i64, i64)> = tx.query_as("lines", (user,))?;
                tx.execute("clear", (user,))?;
                let lines: Vec<Line> = lines.into_iter().map(|(item, qty)| Line { item, qty, price: None }).collect();
                Ok(json!({ "user": user, "lines": lines }))
            }),
        // No partition key: the items of a cart lie on any partition.
        Function::new("shop_take_items")
            .statement("take", "UPDATE shop_items SET stock = stock - $2 WHERE item_id = $1 AND stock >= $2 RETURNING price")
            .run_typed(|tx, Lines { mut lines }| -> Result<serde_json::Value, BoxError> {
                let mut total = 0i64;
                for line in &mut lines {
                    let Some(price) = tx.query_opt::<i64>("take", (line.item, line.qty))? else {
                        return Err(format!("item {} has fewer than {} in stock", line.item, line.qty).into());
                    };
                    line.price = Some(price);
                    total = price.checked_mul(line.qty).and_then(|t| t.checked_add(total)).ok_or("the order's total overflows")?;
                }
                Ok(json!({ "lines": lines, "total": total }))
            }),
        Function::new("shop_record_lines")
            .statement("put", "INSERT INTO shop_orders (order_id, item_id, qty, total) VALUES ($1, $2, $3, $4)")
            .run_typed(|tx, OrderLines { order, lines }| -> Result<serde_json::Value, BoxError> {
                let mut units = 0;
                for line in &lines {
                    let price = line.price.ok_or("an order line needs the price its stock was taken at")?;
                    tx.execute("put", (format!("{order}/{}", line.item), line.item, line.qty, price * line.qty))?;
                    units += line.qty;
                }
                Ok(json!({ "lines": lines.len(), "units": units }))
            }),
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
