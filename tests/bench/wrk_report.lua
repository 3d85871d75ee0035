-- wrk -s wrk_report.lua: print exact totals (wrk's own summary rounds to 2 digits).
-- summary.bytes counts every body byte read, including responses still in flight
-- when the run ends, so bytes/s is the real transfer rate; requests counts completed
-- 100 MiB responses only.
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d bytes=%d duration_us=%d connect_err=%d read_err=%d write_err=%d status_err=%d timeout_err=%d\n",
      summary.requests, summary.bytes, summary.duration,
      e.connect, e.read, e.write, e.status, e.timeout))
end
