-- v2.0.2: delivery details on the order header.
-- Three nullable columns: catalog-only changes, no table rewrite, no scan.

ALTER TABLE cvs_ordr_hdr
    ADD COLUMN ship_to_site_id int2,
    ADD COLUMN rqst_dlvr_dt    date,
    ADD COLUMN ext_ref_no      text;

COMMENT ON COLUMN cvs_ordr_hdr.ship_to_site_id IS 'Receiving site when it differs from site_id.';
COMMENT ON COLUMN cvs_ordr_hdr.rqst_dlvr_dt IS 'Requested delivery date.';
COMMENT ON COLUMN cvs_ordr_hdr.ext_ref_no IS 'Reference of the order in the customer''s system.';
