//! Hotel reservations: finding a free room and taking it run as ONE transaction (a
//! multi-function transaction), so two guests never get the same room. `book` then records
//! a confirmation in a second step: a two-unit workflow, resumed by the server itself after a
//! crash once its start is durable. Confirmations are keyed and partitioned by hotel, as the
//! rooms are, so both units of a booking run on the hotel's partition: a booking invoked
//! without an id commits twice, its start with the first unit and its end with the second.
//! `hotel_search` lists the free rooms of a hotel on a date, reading only.

use comb_backend::Function;
use serde_json::json;

use crate::{App, int};

/// The hotel application.
pub const APP: App = App {
    name: "hotel",
    schema: "
CREATE TABLE IF NOT EXISTS hotel_rooms (
    hotel_id BIGINT NOT NULL, room_id BIGINT NOT NULL, date BIGINT NOT NULL, reserved_by BIGINT,
    PRIMARY KEY (hotel_id, date, room_id)
) WITH (partition_by = 'hotel_id');
CREATE TABLE IF NOT EXISTS hotel_confirmations (
    hotel_id BIGINT NOT NULL, booking TEXT NOT NULL, date BIGINT NOT NULL, room_id BIGINT NOT NULL, user_id BIGINT NOT NULL,
    PRIMARY KEY (hotel_id, booking)
) WITH (partition_by = 'hotel_id');",
    functions,
    workflows: &[
        r#"{"name": "hotel_open", "steps": [{"id": "open", "function": "hotel_add_rooms", "input": "$input"}], "output": "$open"}"#,
        r#"{"name": "hotel_search", "steps": [{"id": "search", "function": "hotel_free_rooms", "input": "$input"}], "output": "$search"}"#,
        r#"{"name": "reserve",
            "steps": [
              {"id": "find", "function": "hotel_find_room", "input": "$input"},
              {"id": "take", "function": "hotel_take_room", "input": {"hotel": "$input.hotel", "date": "$input.date", "user": "$input.user", "room": "$find.room"}}
            ],
            "transactions": [["find", "take"]],
            "output": "$take"}"#,
        r#"{"name": "book",
            "steps": [
              {"id": "find", "function": "hotel_find_room", "input": "$input"},
              {"id": "take", "function": "hotel_take_room", "input": {"hotel": "$input.hotel", "date": "$input.date", "user": "$input.user", "room": "$find.room"}},
              {"id": "confirm", "function": "hotel_confirm", "input": {"booking": "$input.booking", "hotel": "$input.hotel", "date": "$input.date", "user": "$input.user", "room": "$take.room"}}
            ],
            "transactions": [["find", "take"]],
            "output": {"room": "$take.room", "confirmed": "$confirm.confirmed"}}"#,
    ],
};

fn functions() -> Vec<Function> {
    vec![
        Function::new("hotel_add_rooms")
            .statement("add", "INSERT INTO hotel_rooms (hotel_id, room_id, date, reserved_by) VALUES ($1, $2, $3, NULL) ON CONFLICT DO NOTHING")
            .partition_by("hotel")
            .run(|tx, input| {
                let (hotel, rooms, dates) = (int(&input, "hotel")?, int(&input, "rooms")?, int(&input, "dates")?);
                if !(1..=1000).contains(&rooms) || !(1..=366).contains(&dates) {
                    return Err("rooms must be 1 to 1000 and dates 1 to 366".into());
                }
                let mut added = 0;
                for date in 0..dates {
                    for room in 0..rooms {
                        added += tx.execute("add", (hotel, room, date))?;
                    }
                }
                Ok(json!({ "hotel": hotel, "added": added }))
            }),
        Function::new("hotel_free_rooms")
            .statement("free", "SELECT room_id FROM hotel_rooms WHERE hotel_id = $1 AND date = $2 AND reserved_by IS NULL ORDER BY room_id LIMIT 10")
            .partition_by("hotel")
            .run(|tx, input| {
                let rooms: Vec<i64> = tx.query_as("free", (int(&input, "hotel")?, int(&input, "date")?))?;
                Ok(json!({ "rooms": rooms }))
            }),
        Function::new("hotel_find_room")
            .statement("find", "SELECT room_id FROM hotel_rooms WHERE hotel_id = $1 AND date = $2 AND reserved_by IS NULL LIMIT 1")
            .partition_by("hotel")
            .run(|tx, input| {
                let room: Option<i64> = tx.query_opt("find", (int(&input, "hotel")?, int(&input, "date")?))?;
                Ok(json!({ "room": room }))
            }),
        Function::new("hotel_take_room")
            .statement("take", "UPDATE hotel_rooms SET reserved_by = $4 WHERE hotel_id = $1 AND date = $2 AND room_id = $3 AND reserved_by IS NULL")
            .partition_by("hotel")
            .run(|tx, input| {
                let Some(room) = input.get("room").and_then(serde_json::Value::as_i64) else {
                    return Ok(json!({ "room": null }));
                };
                let taken = tx.execute("take", (int(&input, "hotel")?, int(&input, "date")?, room, int(&input, "user")?))?;
                if taken != 1 {
                    return Err(format!("room {room} was not free").into());
                }
                Ok(json!({ "room": room }))
            }),
        Function::new("hotel_confirm")
            .statement("put", "INSERT INTO hotel_confirmations (booking, hotel_id, date, room_id, user_id) VALUES ($1, $2, $3, $4, $5)")
            .partition_by("hotel")
            .run(|tx, input| {
                let Some(room) = input.get("room").and_then(serde_json::Value::as_i64) else {
                    return Ok(json!({ "confirmed": false }));
                };
                let booking = input.get("booking").and_then(serde_json::Value::as_str).ok_or("input field \"booking\" must be a string")?.to_owned();
                tx.execute("put", (booking, int(&input, "hotel")?, int(&input, "date")?, room, int(&input, "user")?))?;
                Ok(json!({ "confirmed": true }))
            }),
    ]
}
