//! What `xlb check` (the same reading as the daemon's config load) costs
//! for a config of many VIPs: time and peak memory, printed, not asserted
//! (they depend on the build profile and on the machine).

use std::{process::Command, time::Instant};

use xlb_tests::{
    daemon::xlb_bin,
    many_vips::{ManyVips, wait_with_peak},
};

#[test]
fn check_reads_many_vips_and_says_what_it_cost() {
    let dir = std::env::temp_dir().join(format!("xlb-many-vips-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let xlb = xlb_bin();
    // maglev_table_size 251 keeps max_vips × maglev_table_size within what
    // the data plane indexes at 100,000 VIPs.
    for vips in [65_536, 100_000] {
        let path = dir.join(format!("{vips}.toml"));
        let text = ManyVips::new(vips, 3, 251).toml();
        std::fs::write(&path, &text).expect("write config");
        let start = Instant::now();
        #[expect(
            clippy::zombie_processes,
            reason = "reaped by wait4, which also says its peak RSS"
        )]
        let child = Command::new(&xlb)
            .arg("check")
            .arg("--config")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn xlb check");
        let (status, peak_kb) = wait_with_peak(child.id());
        let took = start.elapsed();
        assert!(status.success(), "xlb check of {vips} VIPs: {status}");
        println!(
            "xlb check, {vips} VIPs x 3 backends ({:.1} MB of TOML): {:.2} s, peak RSS (VmHWM) {:.0} MB",
            text.len() as f64 / 1e6,
            took.as_secs_f64(),
            peak_kb as f64 / 1024.0
        );
        std::fs::remove_file(&path).expect("remove config");
    }
    let _ = std::fs::remove_dir(&dir);
}
