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
done < /in/cases2.txt
# separate metadata device, 4 KiB blocks, sha1 (20-byte tags straddle sectors)
integritysetup format --batch-mode --integrity sha1 --sector-size 4096 --data-device /dev/vdd /dev/vdc > /out/meta-sha1-4k.format.log 2>&1 || echo "FORMAT FAIL meta"
integritysetup open --integrity sha1 --data-device /dev/vdd /dev/vdc x
dmsetup table x > /out/meta-sha1-4k.table
n=$(blockdev --getsz /dev/mapper/x); echo $n > /out/meta-sha1-4k.size
dd if=/in/pat.bin of=/dev/mapper/x bs=4096 count=$((n/8)) conv=notrunc,fsync 2> /out/meta-sha1-4k.dd.log
integritysetup close x
integritysetup open --integrity sha1 --data-device /dev/vdd /dev/vdc x
sha256sum /dev/mapper/x > /out/meta-sha1-4k.sha256
integritysetup close x
# reserved sectors (table start 16), formatted by the kernel on first load, written with O_DIRECT
dd if=/dev/zero of=/dev/vde bs=512 count=64 2>/dev/null
dmsetup create y --table "0 1 integrity /dev/vde 16 4 J 3 fix_padding fix_hmac internal_hash:crc32c"
dmsetup remove y
n=$(od -A n -t u8 -j 8208 -N 8 /dev/vde | tr -d ' ')
echo "$n" > /out/start16.size
T="0 $n integrity /dev/vde 16 4 J 3 fix_padding fix_hmac internal_hash:crc32c"
echo "$T" > /out/start16.table
dmsetup create y --table "$T"
dd if=/in/pat.bin of=/dev/mapper/y bs=4096 count=$((n/8)) oflag=direct conv=notrunc,fsync 2> /out/start16.dd.log
dmsetup remove y
dmsetup create y --table "$T"
sha256sum /dev/mapper/y > /out/start16.sha256
dmsetup remove y
# old padding with interleave 8: which sectors does the kernel itself fail?
integritysetup format --batch-mode --integrity crc32c --integrity-legacy-padding --interleave-sectors 8 /dev/vdf > /dev/null 2>&1
integritysetup open --integrity crc32c /dev/vdf x
n=$(blockdev --getsz /dev/mapper/x); echo $n > /out/legacy-il8.size
dd if=/in/pat.bin of=/dev/mapper/x bs=4096 count=$((n/8)) oflag=direct conv=notrunc,fsync 2> /out/legacy-il8.dd.log
integritysetup close x
integritysetup open --integrity crc32c /dev/vdf x
i=0; : > /out/legacy-il8.verdicts
while [ $i -lt $n ]; do
  if dd if=/dev/mapper/x of=/dev/null bs=512 skip=$i count=1 iflag=direct 2>/dev/null; then echo "$i ok" >> /out/legacy-il8.verdicts; else echo "$i bad" >> /out/legacy-il8.verdicts; fi
  i=$((i+1))
done
integritysetup close x
