//! Training/evaluation CSV files: `data::Table::parse`, column typing and
//! `Schema::fit` (last column as the label). Errors are fine; panics are findings.

#![no_main]

use libfuzzer_sys::fuzz_target;
use steward::data::Table;
use steward::model::Schema;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = Table::parse("fuzz.csv", data) else {
        return;
    };
    let columns = table.headers.len();
    if columns < 2 {
        return;
    }
    for c in 0..columns {
        let _ = std::hint::black_box(table.column_kind(c));
    }
    if let Ok(schema) = Schema::fit(&table, columns - 1) {
        // Encode every row the way training does (cells of the feature columns).
        let mut x = vec![0f32; schema.width()];
        for row in &table.rows {
            let cells: Vec<&str> = row[..columns - 1].iter().map(String::as_str).collect();
            schema.encode_cells(&cells, &mut x);
        }
        std::hint::black_box(&x);
    }
});
