//! The report as an Excel workbook: one sheet of relays, one of sender identities.
//! Ports and latencies are numbers (latencies in milliseconds), so they sort and
//! add up; everything else is text.

use rust_xlsxwriter::{Format, Workbook, Worksheet};

use super::{COLUMNS, Cell, ReportError, cells, sections};
use crate::plugin::Row;

/// Excel's limit for one cell's text.
const MAX_CELL_CHARS: usize = 32_767;

/// Column headers as written in the workbook (latencies say their unit).
pub fn headers() -> [String; 16] {
    COLUMNS.map(|c| {
        if c.starts_with("Latency") {
            format!("{c} (ms)")
        } else {
            c.to_string()
        }
    })
}

fn sheet(
    ws: &mut Worksheet,
    name: &str,
    rows: &[&Row],
    bold: &Format,
    millis: &Format,
) -> Result<(), ReportError> {
    ws.set_name(name)?;
    for (col, header) in (0u16..).zip(headers()) {
        ws.write_string_with_format(0, col, header, bold)?;
    }
    for (r, row) in (1u32..).zip(rows) {
        for (col, cell) in (0u16..).zip(cells(row)) {
            match cell {
                Cell::Text(t) if t.is_empty() => {}
                Cell::Text(t) => {
                    let t: String = t.chars().take(MAX_CELL_CHARS).collect();
                    ws.write_string(r, col, t)?;
                }
                Cell::Number(n) => {
                    ws.write_number(r, col, n as f64)?;
                }
                Cell::Micros(Some(us)) => {
                    ws.write_number_with_format(r, col, us as f64 / 1e3, millis)?;
                }
                Cell::Micros(None) => {}
            }
        }
    }
    let last_row = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    ws.autofilter(0, 0, last_row, 15)?;
    ws.set_freeze_panes(1, 0)?;
    ws.autofit();
    Ok(())
}

/// The workbook's bytes: sheets "Relays" and "Sender identities".
pub fn to_xlsx(rows: &[Row]) -> Result<Vec<u8>, ReportError> {
    let mut workbook = Workbook::new();
    let bold = Format::new().set_bold();
    let millis = Format::new().set_num_format("0.000");
    for (name, part) in sections(rows) {
        sheet(workbook.add_worksheet(), name, &part, &bold, &millis)?;
    }
    Ok(workbook.save_to_buffer()?)
}
