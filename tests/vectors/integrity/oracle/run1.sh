set -x
mkdir -p /out
while read dev name opts; do
  integritysetup format --batch-mode $opts /dev/$dev > /out/$name.format.log 2>&1 || { echo "FORMAT FAIL $name"; cat /out/$name.format.log; continue; }
  openopts=$(echo "$opts" | sed -e 's/--interleave-sectors [0-9]*//' -e 's/--tag-size [0-9]*//' -e 's/--sector-size [0-9]*//')
  integritysetup open $openopts /dev/$dev x > /out/$name.open.log 2>&1 || { echo "OPEN FAIL $name"; cat /out/$name.open.log; continue; }
  dmsetup table x > /out/$name.table
  n=$(blockdev --getsz /dev/mapper/x)
  echo "$n" > /out/$name.size
  dd if=/in/pat.bin of=/dev/mapper/x bs=512 count=$n conv=notrunc,fsync 2> /out/$name.dd.log
  integritysetup close x
  integritysetup open $openopts /dev/$dev x
  sha256sum /dev/mapper/x > /out/$name.sha256 2> /out/$name.sha.err
  integritysetup close x
  integritysetup dump /dev/$dev > /out/$name.dump.txt
done < /in/cases.txt
# reserved sectors: the table's start offset, made with dmsetup (the kernel formats on first load)
dd if=/dev/zero of=/dev/vdl bs=512 count=64 2>/dev/null
dmsetup create y --table "0 1 integrity /dev/vdl 16 4 J 3 fix_padding fix_hmac internal_hash:crc32c"
dmsetup remove y
n=$(od -A n -t u8 -j 8208 -N 8 /dev/vdl | tr -d ' ')
echo "$n" > /out/start16.size
T="0 $n integrity /dev/vdl 16 4 J 3 fix_padding fix_hmac internal_hash:crc32c"
echo "$T" > /out/start16.table
dmsetup create y --table "$T"
dd if=/in/pat.bin of=/dev/mapper/y bs=512 count=$n conv=notrunc,fsync 2> /out/start16.dd.log
dmsetup remove y
dmsetup create y --table "$T"
sha256sum /dev/mapper/y > /out/start16.sha256
dmsetup remove y
