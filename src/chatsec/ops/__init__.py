"""Operations: health report (doctor), verified logical backups and restores, PITR drills."""
