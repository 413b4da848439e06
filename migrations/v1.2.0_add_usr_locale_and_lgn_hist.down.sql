-- Undo v1.2.0: drop cvs_usr_lgn_hist, then the cvs_usr_mast.lcl_cd column.

DROP TABLE cvs_usr_lgn_hist;
ALTER TABLE cvs_usr_mast DROP COLUMN lcl_cd;
