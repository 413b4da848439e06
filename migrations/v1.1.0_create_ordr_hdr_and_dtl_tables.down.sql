-- Undo v1.1.0: drop the order detail table, then the order header.

DROP TABLE cvs_ordr_dtl;
DROP TABLE cvs_ordr_hdr;
