-- v2.0.9: order summary view for the dashboard.
-- One row per order: header fields, status label, line count and value.

CREATE VIEW cvs_ordr_summ_v AS
SELECT h.clnt_id,
       h.site_id,
       h.ordr_id,
       h.ordr_no,
       h.ordr_dt,
       h.rqst_dlvr_dt,
       h.ordr_stat,
       r.stat_nm,
       r.is_term,
       count(d.line_no)                        AS line_cnt,
       coalesce(sum(d.ordr_qty * d.unit_prc), 0) AS ordr_val
FROM cvs_ordr_hdr AS h
LEFT JOIN cvs_ordr_stat_ref AS r ON r.ordr_stat = h.ordr_stat
LEFT JOIN cvs_ordr_dtl AS d
       ON d.clnt_id = h.clnt_id AND d.site_id = h.site_id AND d.ordr_id = h.ordr_id
WHERE h.rcrd_stat = 1
GROUP BY h.clnt_id, h.site_id, h.ordr_id, r.stat_nm, r.is_term;

COMMENT ON VIEW cvs_ordr_summ_v IS 'Active orders with status label, line count and value.';
