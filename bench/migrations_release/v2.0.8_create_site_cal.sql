-- v2.0.8: working calendar per site (delivery date planning).
-- One row per site and date; only exceptions to the default week are stored.

CREATE TABLE cvs_site_cal (
    clnt_id     int2        NOT NULL,
    site_id     int2        NOT NULL,
    cal_dt      date        NOT NULL,
    is_wrk_day  boolean     NOT NULL,
    cal_note    text,
    rcrd_stat   int2        NOT NULL DEFAULT 1,
    mod_dttm    timestamptz NOT NULL DEFAULT now(),
    mod_by      text,
    CONSTRAINT cvs_site_cal_pk PRIMARY KEY (clnt_id, site_id, cal_dt),
    CONSTRAINT cvs_site_cal_site_fk FOREIGN KEY (clnt_id, site_id)
        REFERENCES cvs_site_mast (clnt_id, site_id) ON DELETE CASCADE,
    CONSTRAINT cvs_site_cal_rcrd_stat_ck CHECK (rcrd_stat IN (0, 1))
);

COMMENT ON TABLE cvs_site_cal IS 'Calendar exceptions per site: holidays, extra working days.';

-- Next non-working days of a site.
CREATE INDEX cvs_site_cal_off_ix ON cvs_site_cal (clnt_id, site_id, cal_dt) WHERE NOT is_wrk_day;
