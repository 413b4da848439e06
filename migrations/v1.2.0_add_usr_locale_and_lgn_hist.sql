-- v1.2.0: release change for user locale and login history.
-- Adds the nullable column cvs_usr_mast.lcl_cd with a default (a catalog-only
-- change on PostgreSQL 11+, no table rewrite), and the new table
-- cvs_usr_lgn_hist recording login attempts per user.

ALTER TABLE cvs_usr_mast ADD COLUMN lcl_cd text DEFAULT 'en-US';

COMMENT ON COLUMN cvs_usr_mast.lcl_cd IS 'UI locale (BCP 47 tag); NULL means the site default.';

CREATE TABLE cvs_usr_lgn_hist (
    clnt_id    int2        NOT NULL,
    site_id    int2        NOT NULL,
    lgn_id     int8        GENERATED ALWAYS AS IDENTITY,
    usr_id     int4        NOT NULL,
    lgn_dttm   timestamptz NOT NULL DEFAULT now(),
    lgn_ok     boolean     NOT NULL,
    clnt_addr  inet,
    usr_agnt   text,
    rcrd_stat  int2        NOT NULL DEFAULT 1,
    mod_dttm   timestamptz NOT NULL DEFAULT now(),
    mod_by     text,
    CONSTRAINT cvs_usr_lgn_hist_pk PRIMARY KEY (clnt_id, site_id, lgn_id),
    CONSTRAINT cvs_usr_lgn_hist_usr_fk FOREIGN KEY (clnt_id, site_id, usr_id)
        REFERENCES cvs_usr_mast (clnt_id, site_id, usr_id) ON DELETE CASCADE,
    CONSTRAINT cvs_usr_lgn_hist_rcrd_stat_ck CHECK (rcrd_stat IN (0, 1))
);

COMMENT ON TABLE cvs_usr_lgn_hist IS 'Login attempts per user.';

-- Recent logins of a user (also serves the foreign key to cvs_usr_mast).
CREATE INDEX cvs_usr_lgn_hist_usr_ix ON cvs_usr_lgn_hist (clnt_id, site_id, usr_id, lgn_dttm DESC);

-- Failed logins, for lock-out checks.
CREATE INDEX cvs_usr_lgn_hist_fail_ix ON cvs_usr_lgn_hist (clnt_id, site_id, usr_id, lgn_dttm)
    WHERE NOT lgn_ok;
