# Guest side of roundtrip.py: open what dmkit formatted, read it, write the pattern, reread.
mkdir -p /out
{ uname -r; integritysetup --version; } > /out/versions.txt 2>&1
while read dev name opts; do
  if ! integritysetup open $opts $dev x > /out/$name.open.log 2>&1; then
    echo "OPEN FAIL $name"; cat /out/$name.open.log; continue
  fi
  dmsetup table x > /out/$name.table
  n=$(blockdev --getsz /dev/mapper/x); echo "$n" > /out/$name.size
  sha256sum /dev/mapper/x > /out/$name.zero.sha256 2> /out/$name.zero.err
  dmsetup status x > /out/$name.status1
  dd if=/in/pat.bin of=/dev/mapper/x bs=512 count=$n conv=notrunc,fsync 2> /out/$name.dd.log
  integritysetup close x
  integritysetup open $opts $dev x
  sha256sum /dev/mapper/x > /out/$name.pat.sha256 2> /out/$name.pat.err
  dmsetup status x > /out/$name.status2
  integritysetup close x
done < /in/cases.txt
dmesg > /out/dmesg.txt
sync
