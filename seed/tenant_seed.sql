-- Tenant seed: run once per tenant at provisioning, after all migrations, in
-- the same transaction as its history row. Creates one cvs_site_mast row per
-- site, an ADMIN group and an "admin" user on the first site, and the
-- membership linking them. Safe to re-run (ON CONFLICT DO NOTHING).
--
-- The tenant's values arrive only as settings, read with current_setting():
--   tenantctl.clnt_id      the client id (int2; also as tenantctl.tenant_id)
--   tenantctl.tenant_name  the tenant's display name (any text; used only as a value)
--   tenantctl.sites        comma-separated site ids, first one first, e.g. '1,2';
--                          '' for a tenant without sites (tenants.yaml: sites is optional)

-- XOS needs a first site for the admin user: refuse a tenant without one by name
-- (instead of a NOT NULL violation further down).
DO $$
BEGIN
    IF current_setting('tenantctl.sites') = '' THEN
        RAISE EXCEPTION 'XOS tenant % has no sites', current_setting('tenantctl.clnt_id')
            USING HINT = 'give it at least one in tenants.yaml, e.g. sites: [1]';
    END IF;
END
$$;

-- One site row per site id.
INSERT INTO cvs_site_mast (clnt_id, site_id, site_cd, site_nm, mod_by)
SELECT current_setting('tenantctl.clnt_id')::int2,
       s.site_id,
       'S' || s.site_id,
       current_setting('tenantctl.tenant_name') || ' - site ' || s.site_id,
       'tenantctl'
FROM unnest(string_to_array(current_setting('tenantctl.sites'), ',')::int2[]) AS s (site_id)
ON CONFLICT (clnt_id, site_id) DO NOTHING;

-- The administrators group on the first site.
INSERT INTO cvs_grp_mast (clnt_id, site_id, grp_cd, grp_nm, grp_desc, mod_by)
SELECT current_setting('tenantctl.clnt_id')::int2,
       (string_to_array(current_setting('tenantctl.sites'), ',')::int2[])[1],
       'ADMIN',
       'Administrators',
       'Full access for ' || current_setting('tenantctl.tenant_name'),
       'tenantctl'
ON CONFLICT (clnt_id, site_id, grp_cd) DO NOTHING;

-- The admin user on the first site (usr_id comes from the identity column).
INSERT INTO cvs_usr_mast (clnt_id, site_id, usr_lgn, usr_nm, usr_prefs, mod_by)
SELECT current_setting('tenantctl.clnt_id')::int2,
       (string_to_array(current_setting('tenantctl.sites'), ',')::int2[])[1],
       'admin',
       current_setting('tenantctl.tenant_name') || ' administrator',
       jsonb_build_object('theme', 'default', 'pwd_chg_reqd', true),
       'tenantctl'
ON CONFLICT (clnt_id, site_id, usr_lgn) DO NOTHING;

-- Membership: admin user in the ADMIN group, both looked up by their codes.
INSERT INTO cvs_usr_grp (clnt_id, site_id, usr_id, grp_id, mod_by)
SELECT u.clnt_id, u.site_id, u.usr_id, g.grp_id, 'tenantctl'
FROM cvs_usr_mast AS u
JOIN cvs_grp_mast AS g
  ON g.clnt_id = u.clnt_id
 AND g.site_id = u.site_id
 AND g.grp_cd = 'ADMIN'
WHERE u.clnt_id = current_setting('tenantctl.clnt_id')::int2
  AND u.site_id = (string_to_array(current_setting('tenantctl.sites'), ',')::int2[])[1]
  AND u.usr_lgn = 'admin'
ON CONFLICT (clnt_id, site_id, usr_id, grp_id) DO NOTHING;
