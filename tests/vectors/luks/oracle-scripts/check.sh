# Guest side of build.py: the real kernel opens the volumes dmkit formatted and filled.
# /in/cases.list: NAME DATA_DEV HEADER_DEV(or -) START_SECTOR COUNT_SECTORS
# /in/keys/NAME.pass: the passphrase (no newline); /in/kpat.bin: what the kernel writes.
# Per volume: cryptsetup open --key-file; dmsetup table (keys are keyring references, or
# masked); sha256 of the whole mapped device; then the kernel writes /in/kpat.bin over
# [START, START+COUNT) (4 KiB dd blocks, fsync) and reads that range back; close.
mkdir -p /out
uname -r > /out/uname-r.txt
cryptsetup --version > /out/cryptsetup-version.txt
dmsetup version > /out/dmsetup-version.txt
dmesg -c > /dev/null 2>&1
rc=0
while read n dev hdr start count; do
  [ -n "$n" ] || continue
  o=/out/$n
  : > $o.log
  if [ "$hdr" = "-" ]; then hopt=""; else hopt="--header $hdr"; fi
  if ! cryptsetup open $hopt --key-file /in/keys/$n.pass $dev $n >> $o.log 2>&1; then
    echo "OPEN FAIL $n" | tee -a $o.log; echo fail > $o.result; rc=1; continue
  fi
  dmsetup table $n > $o.table
  for d in $(dmsetup ls | cut -f1 | grep "^${n}_dif"); do dmsetup table $d | sed "s/^/$d: /" >> $o.table; done
  blockdev --getsz /dev/mapper/$n > $o.size
  if sha256sum /dev/mapper/$n > $o.sha256 2>> $o.log; then :; else echo "READ FAIL $n" | tee -a $o.log; rc=1; fi
  bs=4096
  dd if=/in/kpat.bin of=/dev/mapper/$n bs=$bs seek=$((start / 8)) count=$((count / 8)) conv=notrunc,fsync >> $o.log 2>&1 || { echo "WRITE FAIL $n" | tee -a $o.log; rc=1; }
  dd if=/dev/mapper/$n bs=$bs skip=$((start / 8)) count=$((count / 8)) 2>/dev/null | sha256sum > $o.ksha256
  cryptsetup close $n >> $o.log 2>&1 || { echo "CLOSE FAIL $n" | tee -a $o.log; rc=1; }
  dmesg -c > $o.dmesg 2>&1
  echo ok > $o.result
done < /in/cases.list
exit $rc
