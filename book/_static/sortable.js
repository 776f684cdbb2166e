// Click a column header of any table in the book to sort by it (numbers numerically); click again to reverse.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table").forEach(function (table) {
    var body = table.tBodies[0];
    if (!body || body.rows.length < 8) return; // only long tables
    var headers = table.tHead ? table.tHead.rows[table.tHead.rows.length - 1].cells : [];
    Array.prototype.forEach.call(headers, function (header, column) {
      header.style.cursor = "pointer";
      header.title = "sort by this column";
      header.addEventListener("click", function () {
        var ascending = header.dataset.sorted !== "asc";
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = (a.cells[column] || {}).textContent || "", y = (b.cells[column] || {}).textContent || "";
          var nx = parseFloat(x.replace(/[,%]/g, "")), ny = parseFloat(y.replace(/[,%]/g, ""));
          var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
        Array.prototype.forEach.call(headers, function (h) { delete h.dataset.sorted; });
        header.dataset.sorted = ascending ? "asc" : "desc";
      });
    });
  });
});
