-- v2.0.7: order status history, written by a trigger on cvs_ordr_hdr.
-- Every change of cvs_ordr_hdr.ordr_stat leaves one row: from, to, who, when.

CREATE TABLE cvs_ordr_stat_hist (
    clnt_id    int2        NOT NULL,
    site_id    int2        NOT NULL,
    hist_id    int8        GENERATED ALWAYS AS IDENTITY,
    ordr_id    int8        NOT NULL,
    from_stat  text,
    to_stat    text        NOT NULL,
    chg_dttm   timestamptz NOT NULL DEFAULT now(),
    chg_by     text        NOT NULL DEFAULT current_user,
    rcrd_stat  int2        NOT NULL DEFAULT 1,
    CONSTRAINT cvs_ordr_stat_hist_pk PRIMARY KEY (clnt_id, site_id, hist_id),
    CONSTRAINT cvs_ordr_stat_hist_ordr_fk FOREIGN KEY (clnt_id, site_id, ordr_id)
        REFERENCES cvs_ordr_hdr (clnt_id, site_id, ordr_id) ON DELETE CASCADE,
    CONSTRAINT cvs_ordr_stat_hist_rcrd_stat_ck CHECK (rcrd_stat IN (0, 1))
);

COMMENT ON TABLE cvs_ordr_stat_hist IS 'Status changes of orders (written by cvs_ordr_hdr_stat_trg).';

-- History of one order, in order (also serves the foreign key).
CREATE INDEX cvs_ordr_stat_hist_ordr_ix ON cvs_ordr_stat_hist (clnt_id, site_id, ordr_id, chg_dttm);

CREATE FUNCTION cvs_ordr_hdr_stat_fn() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.ordr_stat IS DISTINCT FROM OLD.ordr_stat THEN
        INSERT INTO cvs_ordr_stat_hist (clnt_id, site_id, ordr_id, from_stat, to_stat, chg_by)
        VALUES (NEW.clnt_id, NEW.site_id, NEW.ordr_id,
                CASE WHEN TG_OP = 'UPDATE' THEN OLD.ordr_stat END,
                NEW.ordr_stat, coalesce(NEW.mod_by, current_user));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER cvs_ordr_hdr_stat_trg
    AFTER INSERT OR UPDATE OF ordr_stat ON cvs_ordr_hdr
    FOR EACH ROW EXECUTE FUNCTION cvs_ordr_hdr_stat_fn();
